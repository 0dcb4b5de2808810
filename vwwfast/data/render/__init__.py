"""Renderers: (sample indices, view parameters, output size) -> normalised batch.

base.py the interface, factory.py picks one, prefetch.py renders ahead in a thread;
reference.py (PIL), decoded.py (a decoded uint8 cache), dali.py (NVIDIA DALI) the three
implementations, color.py and resample.py the batch operations they share."""
