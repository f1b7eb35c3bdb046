"""Benchmarks (not tests): each module compares ours with a baseline in the same run."""
