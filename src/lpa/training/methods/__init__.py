"""Training methods: one module each, found and registered by :data:`lpa.training.base.METHODS`."""
