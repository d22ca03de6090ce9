"""What the tests and the benchmarks share (never imported by the product): hostile files, live
servers and Ray clusters started and ended, waits that grow with the machine's load, stores of
made-up runs, the reproduction check's reference, the optional packages a test requires (skipped
without them, failing under CI), and the matmul peak that puts training speed in
proportion."""
