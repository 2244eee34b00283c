# auditsvc image: the same commands as the Makefile (migrate, collectstatic, gunicorn -c gunicorn.conf.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AUDITSVC_VAR_DIR=/app/var

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# collectstatic needs no database; DATABASE_URL only keeps settings from starting the embedded one.
RUN DATABASE_URL=postgres://build@localhost/build SECRET_KEY=build-only python manage.py collectstatic --noinput -v0 \
    && useradd --system --home /app auditsvc && mkdir -p /app/var && chown auditsvc /app/var

USER auditsvc
EXPOSE 8000
# Migrations run at start (idempotent); set SECRET_KEY and DATABASE_URL in the environment.
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn auditsvc.wsgi -c gunicorn.conf.py -b 0.0.0.0:8000"]
