"""Task entry points: ``run(cfg) -> dict`` for train, evaluate and infer."""
