"""The training stage: the recipe (a run's training settings), the training loop, the stop rule,
precise BatchNorm, and the recipe selection (learning rate and weight decay chosen on validation)."""
