"""The engine behind `couplednoise demo` and the web demo: independent vs coupled galleries
from one seed, scored side by side."""
