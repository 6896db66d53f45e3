"""``retouch web``: a local web page and REST API in front of the batch flow.

Each batch runs as its own ``retouch run`` process; the server follows its progress events
and serves the page, thumbnails, results and ZIP downloads.
"""
