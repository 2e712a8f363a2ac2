"""The vision-language side: hub loading, the image pipeline, caches,
templates, the annotation report and sharding. Never imports the
classifiers."""
