"""Tiny random stand-ins of the real models, for the tests and benchmarks (no downloads).

tiny    LLaVA, InstructBLIP and the response converter in their released layouts
"""
