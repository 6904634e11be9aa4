"""Distillation components: frozen teachers and where they keep Q/K/V, the relation and logit losses."""
