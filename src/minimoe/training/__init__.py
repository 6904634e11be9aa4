"""Training components: the accelerate loop (trainer), objectives (a batch in, losses out), teacher-output caches."""
