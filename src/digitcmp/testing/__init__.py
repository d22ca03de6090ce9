"""What the tests and the benchmarks share (never imported by the product): digit images drawn as
people make them, and the matmul peak that puts training speed in proportion."""
