# One terraform_data per AWS resource of the production configuration. `triggers_replace` holds the
# arguments whose change makes AWS replace the resource (the AWS provider's ForceNew attributes):
# for the database and Redis a replacement loses the data, and the plan shows it.

locals {
  prefix            = "${var.project_name}-${var.environment}"
  app_desired_count = 3
  tags = {
    Project     = var.project_name
    Environment = var.environment
    ManagedBy   = "terraform"
  }
}

resource "terraform_data" "db_security_group" {
  input = {
    aws_type    = "aws_security_group"
    name        = "${local.prefix}-db-sg"
    description = "PostgreSQL from the application and PgBouncer"
    tags        = local.tags
  }
  triggers_replace = ["${local.prefix}-db-sg", "PostgreSQL from the application and PgBouncer"]
}

resource "terraform_data" "redis_security_group" {
  input = {
    aws_type    = "aws_security_group"
    name        = "${local.prefix}-redis-sg"
    description = "Redis from the application"
    tags        = local.tags
  }
  triggers_replace = ["${local.prefix}-redis-sg", "Redis from the application"]
}

resource "terraform_data" "app_security_group" {
  input = {
    aws_type    = "aws_security_group"
    name        = "${local.prefix}-app-sg"
    description = "Application tasks behind the load balancer"
    tags        = local.tags
  }
  triggers_replace = ["${local.prefix}-app-sg", "Application tasks behind the load balancer"]
}

resource "terraform_data" "db_primary" {
  input = {
    aws_type                = "aws_db_instance"
    identifier              = "${local.prefix}-db"
    engine                  = "postgres"
    engine_version          = "15.7"
    instance_class          = var.db_instance_class
    allocated_storage       = 100
    storage_type            = "gp3"
    db_name                 = "bisman_${var.environment}"
    username                = "bisman_app"
    password                = var.sandbox_db_password
    multi_az                = true
    storage_encrypted       = true
    backup_retention_period = 7
    deletion_protection     = true
    vpc_security_group_ids  = [terraform_data.db_security_group.id]
    tags                    = local.tags
  }
  triggers_replace = {
    identifier        = "${local.prefix}-db"
    engine            = "postgres"
    db_name           = "bisman_${var.environment}"
    username          = "bisman_app"
    storage_encrypted = true
  }
}

resource "terraform_data" "db_replica" {
  input = {
    aws_type            = "aws_db_instance"
    identifier          = "${local.prefix}-replica"
    replicate_source_db = terraform_data.db_primary.output.identifier
    instance_class      = var.db_instance_class
    storage_encrypted   = true
    tags                = local.tags
  }
  triggers_replace = {
    identifier          = "${local.prefix}-replica"
    replicate_source_db = "${local.prefix}-db"
    storage_encrypted   = true
  }
}

resource "terraform_data" "redis" {
  input = {
    aws_type                   = "aws_elasticache_replication_group"
    replication_group_id       = "${local.prefix}-redis"
    description                = "BISMAN ERP cache and sessions"
    engine                     = "redis"
    engine_version             = "7.1"
    node_type                  = var.redis_node_type
    num_cache_clusters         = 2
    automatic_failover_enabled = true
    multi_az_enabled           = true
    at_rest_encryption_enabled = true
    transit_encryption_enabled = true
    port                       = 6379
    security_group_ids         = [terraform_data.redis_security_group.id]
    tags                       = local.tags
  }
  triggers_replace = {
    replication_group_id       = "${local.prefix}-redis"
    engine                     = "redis"
    at_rest_encryption_enabled = true
    port                       = 6379
  }
}

resource "terraform_data" "app_secrets" {
  input = {
    aws_type                = "aws_secretsmanager_secret"
    name                    = "${var.project_name}/${var.environment}/app-secrets"
    recovery_window_in_days = 7
    tags                    = local.tags
  }
  triggers_replace = ["${var.project_name}/${var.environment}/app-secrets"]
}

resource "terraform_data" "app_log_group" {
  input = {
    aws_type          = "aws_cloudwatch_log_group"
    name              = "/aws/ecs/${local.prefix}/app"
    retention_in_days = 30
    tags              = local.tags
  }
  triggers_replace = ["/aws/ecs/${local.prefix}/app"]
}

resource "terraform_data" "ecs_cluster" {
  input = {
    aws_type = "aws_ecs_cluster"
    name     = local.prefix
    tags     = local.tags
  }
  triggers_replace = [local.prefix]
}

locals {
  container_definitions = jsonencode([{
    name         = "app"
    image        = var.app_image
    essential    = true
    portMappings = [{ containerPort = 3000 }]
    secrets      = [{ name = "APP_SECRETS", valueFrom = local.seeded.app_secrets_arn }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = terraform_data.app_log_group.output.name
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = "app"
      }
    }
  }])
}

resource "terraform_data" "app_task_definition" {
  input = {
    aws_type                 = "aws_ecs_task_definition"
    family                   = "${local.prefix}-app"
    requires_compatibilities = ["FARGATE"]
    network_mode             = "awsvpc"
    cpu                      = "512"
    memory                   = "1024"
    container_definitions    = local.container_definitions
    tags                     = local.tags
  }
  # Every change of a task definition registers a new revision.
  triggers_replace = ["${local.prefix}-app", "512", "1024", local.container_definitions]
}

resource "terraform_data" "app_service" {
  input = {
    aws_type                          = "aws_ecs_service"
    name                              = local.prefix
    cluster                           = terraform_data.ecs_cluster.output.name
    task_definition                   = terraform_data.app_task_definition.output.family
    desired_count                     = local.app_desired_count
    launch_type                       = "FARGATE"
    health_check_grace_period_seconds = 60
    security_groups                   = [terraform_data.app_security_group.id]
    tags                              = local.tags
  }
  triggers_replace = [local.prefix, "FARGATE"]
}

resource "terraform_data" "alb" {
  input = {
    aws_type           = "aws_lb"
    name               = "${local.prefix}-alb"
    internal           = false
    load_balancer_type = "application"
    tags               = local.tags
  }
  triggers_replace = ["${local.prefix}-alb", false, "application"]
}

resource "terraform_data" "certificate" {
  input = {
    aws_type          = "aws_acm_certificate"
    domain_name       = var.domain_name
    validation_method = "DNS"
    tags              = local.tags
  }
  triggers_replace = [var.domain_name, "DNS"]
}

resource "terraform_data" "waf" {
  input = {
    aws_type             = "aws_wafv2_web_acl"
    name                 = "${local.prefix}-waf"
    scope                = "REGIONAL"
    default_action       = "allow"
    managed_rule_groups  = ["AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"]
    rate_limit_per_5_min = 2000
    tags                 = local.tags
  }
  triggers_replace = ["${local.prefix}-waf", "REGIONAL"]
}

# Sandbox fault hook: TF_VAR_sandbox_fail_apply=true makes the apply fail after the other resources
# (a local-exec that exits 1), so the rollout's "apply failed halfway" path runs on real Terraform.
resource "terraform_data" "sandbox_fault" {
  count      = var.sandbox_fail_apply ? 1 : 0
  depends_on = [terraform_data.app_service, terraform_data.db_replica, terraform_data.redis, terraform_data.waf]

  provisioner "local-exec" {
    command = "echo 'sandbox fault: apply failed on purpose (TF_VAR_sandbox_fail_apply)' >&2; exit 1"
  }
}
