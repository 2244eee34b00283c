# auditsvc image: the same commands as the Makefile (migrate, partitions, collectstatic, gunicorn -c gunicorn.conf.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AUDITSVC_VAR_DIR=/app/var

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# collectstatic needs no database; it runs in development mode with throwaway values, which
# never reach the image's environment.
RUN AUDITSVC_ENV=development DATABASE_URL=postgres://build@localhost/build SECRET_KEY=build-only \
        python manage.py collectstatic --noinput -v0 \
    && useradd --system --home /app auditsvc && mkdir -p /app/var /archive && chown auditsvc /app/var /archive

# Production: no embedded database, no generated secret, no unsigned seal. Every process
# refuses to start, naming what is missing, without DATABASE_URL, SECRET_KEY and
# AUDIT_SIGNING_KEY (or AUDIT_PUBLIC_KEYS for processes that only verify): see .env.example.
ENV AUDITSVC_ENV=production
USER auditsvc
EXPOSE 8000
# Migrations run at start (idempotent). The sealer runs as its own process from the same image:
# `python manage.py seal_events --loop` (docker-compose.yml's `sealer`).
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py partitions --no-list && exec gunicorn auditsvc.wsgi -c gunicorn.conf.py -b 0.0.0.0:8000"]
