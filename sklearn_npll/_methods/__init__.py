"""The partial-label methods: stateless label math, sample selection, and one
trainer per method that runs its epochs on a fit context."""
