"""One way to talk to each external system, built on the Airflow providers' hooks: ``postgres``,
``aws`` (boto3 through ``AwsBaseHook``), ``app_http`` (the application through ``HttpHook``),
``stripe`` (the official SDK), ``rds`` (``RdsHook`` and botocore waiters), ``s3`` (``S3Hook``).
Each takes an Airflow connection id; nothing here reads the sandbox."""
