"""The robust-loss-under-label-noise study (``config.task = 'noisy_labels'``)."""
