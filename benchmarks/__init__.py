"""Benchmarks of colorjax against PyTorch implementations of the same training steps.

`python -m benchmarks.compare --model eccv16 --size 128 --batch 8` (needs torch); see compare.py.
"""
