# The image of the CeleryExecutor deployment (docker-compose.yaml): the official Airflow image plus
# this project's pinned requirements. DAGs, include/ and plugins/ are mounted, not baked in.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt "apache-airflow-providers-celery" "redis"
ENV PYTHONPATH=/opt/airflow/include
