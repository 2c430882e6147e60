"""The numeric precisions a network may run in: one list, which the recipe (training) and the device
(serving) both read. Torch-free, so the run sheet can validate a recipe without importing torch."""

PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where the device runs it fast (sonoseg.serving.device)
