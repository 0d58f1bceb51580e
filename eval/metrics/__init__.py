"""Pure metric functions on tensors (torchmetrics' functional style) and the metric registry.

Images are float [N, 3, H, W] in [0, 1]; features [n, d]. Loading a backbone is a separate step
(``couplednoise.eval.backbones``); ``registry.METRICS`` says what each named metric needs.
"""
