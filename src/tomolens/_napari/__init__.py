"""napari glue without Qt: reader, writers, sample data, layer conversion."""
