"""Model side: loading SD1.5 / SDXL / SD3, coupled generation, the lab model, inversion."""
