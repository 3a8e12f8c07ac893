"""Pure array/tensor functions. Nothing here imports the rest of histolib."""
