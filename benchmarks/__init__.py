"""statevault benchmarks: not tests, and not run by pytest.

Run them from the repository root with `.venv/bin/python -m benchmarks` (add `--quick`
to skip the ~100 MB state). See docs/performance.md for what is measured and why.
"""
