# One image for the API server (gunicorn), the Celery worker and Celery beat.
# Runs with DJANGO_SETTINGS_MODULE=config.settings.production; see docker-compose.yml and
# .env.example for the configuration it needs at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=config.settings.production

WORKDIR /app

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

# Dependencies first, from pyproject.toml alone, so that code changes reuse this layer.
# (Without the packages next to it `pip install .` installs the dependencies and an empty
# distribution; the code itself runs from /app, which PYTHONPATH puts first.)
COPY pyproject.toml ./
RUN pip install . && rm -rf build ./*.egg-info

COPY . .

# Static files (admin, Swagger UI) are collected into the image and served by WhiteNoise.
# Production settings refuse to import without these variables; the values below exist only
# for this build step and are not kept in the image.
RUN SECRET_KEY=build-only-not-a-secret \
    ALLOWED_HOSTS=localhost \
    DATABASE_URL=postgres://build:build@localhost:5432/build \
    CELERY_BROKER_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput -v 0

USER app

EXPOSE 8000

CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
