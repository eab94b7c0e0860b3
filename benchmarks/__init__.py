"""Side-by-side benchmarks of xetrack_c against xetrack 0.7, yanex 0.6, Python's own tools and a
C program that marks the physical limit. Run ``python -m benchmarks --help``."""
