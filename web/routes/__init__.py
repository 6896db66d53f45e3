"""The API's routes, one module per resource: the server and presets, batches, results."""
