"""Loss terms: small callables ``term(outputs) -> scalar``, weighted, summed by the module."""
