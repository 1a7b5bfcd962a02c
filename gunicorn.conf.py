"""gunicorn's settings for this service (read from the working directory by default).

gunicorn answers a request line longer than its limit itself, with an HTML 414 page. Here it
lets long lines through (0: no limit of its own; gunicorn still reads no more than 1 MB) so
that Django answers them under /api/ with the API's JSON 414 ``uri_too_long`` at
``API_MAX_URL_LENGTH`` (core/api/limits.py)."""

limit_request_line = 0


def post_worker_init(worker) -> None:
    """Once a worker has loaded the application: import the URLconf (every view, serializer and
    model with it), then move all that was loaded out of the garbage collector's sight
    (``gc.freeze``). Otherwise every full collection walks all of Django again: a pause of about
    30 ms in a response that builds many objects (an availability search over a thousand pools
    doubles its p99)."""
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imported for its side effect
    gc.freeze()
