"""gunicorn's settings for this service (read from the working directory by default).

gunicorn answers a request line longer than its limit itself, with an HTML 414 page. Here it
lets long lines through (0: no limit of its own; gunicorn still reads no more than 1 MB) so
that Django answers them under /api/ with the API's JSON 414 ``uri_too_long`` at
``API_MAX_URL_LENGTH`` (core/api/limits.py)."""

limit_request_line = 0
