"""Networks: one model family per file, tensor shapes in every docstring."""
