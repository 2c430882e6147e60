"""The serving stage: the model file (format, safe loading, atomic save), device and precision,
inference and `segment` (one model or a run folder's ensemble), the ONNX export and the cost of a
network. Nothing here imports the training stage: a predictor reads a model file, never a trainer."""
