# CONTRACT.md's outputs. Names and identifiers come from the resources; where the sandbox has a local
# service instead of an AWS endpoint (database, PgBouncer, Redis, the API) or an id only moto knows
# (ARNs, the security group), the value comes from var.sandbox.

locals {
  seeded = var.sandbox.environments[var.environment]
}

output "db_instance_identifier" {
  value       = terraform_data.db_primary.output.identifier
  description = "RDS primary instance."
}

output "db_replica_identifier" {
  value       = terraform_data.db_replica.output.identifier
  description = "RDS read replica."
}

output "db_primary_address" {
  value       = var.sandbox.host
  description = "Host of the primary (sandbox: local PostgreSQL)."
}

output "db_replica_address" {
  value       = var.sandbox.host
  description = "Host of the replica (sandbox: local PostgreSQL)."
}

output "db_port" {
  value       = var.sandbox.db_primary_port
  description = "Port of the primary."
}

output "db_replica_port" {
  value       = var.sandbox.db_replica_port
  description = "Port of the replica (added: the sandbox's replica listens on its own port)."
}

output "db_name" {
  value       = terraform_data.db_primary.output.db_name
  description = "Application database."
}

output "db_security_group_id" {
  value       = local.seeded.db_security_group_id
  description = "Security group of the database (sandbox: from the moto seeding)."
}

output "db_client_security_group_ids" {
  value       = [local.seeded.app_security_group_id, local.seeded.pgbouncer_security_group_id]
  description = "Security groups the database's group admits: the application's and PgBouncer's (added; sandbox: from the moto seeding)."
}

output "pgbouncer_address" {
  value       = var.sandbox.host
  description = "PgBouncer host."
}

output "pgbouncer_port" {
  value       = var.sandbox.pgbouncer_port
  description = "PgBouncer port."
}

output "redis_replication_group_id" {
  value       = terraform_data.redis.output.replication_group_id
  description = "ElastiCache replication group."
}

output "redis_primary_endpoint" {
  value       = var.sandbox.host
  description = "Host of the Redis primary (sandbox: local redis-server)."
}

output "redis_port" {
  value       = var.sandbox.redis_port
  description = "Redis port."
}

output "ecs_cluster_name" {
  value       = terraform_data.ecs_cluster.output.name
  description = "ECS cluster."
}

output "ecs_service_name" {
  value       = terraform_data.app_service.output.name
  description = "ECS service of the application."
}

output "app_task_family" {
  value       = terraform_data.app_task_definition.output.family
  description = "Task definition family."
}

output "app_log_group" {
  value       = terraform_data.app_log_group.output.name
  description = "CloudWatch log group of the application."
}

output "app_secrets_arn" {
  value       = local.seeded.app_secrets_arn
  description = "Secrets Manager secret of the application (sandbox: from the moto seeding)."
}

output "alb_arn" {
  value       = local.seeded.alb_arn
  description = "Load balancer (sandbox: from the moto seeding)."
}

output "alb_dns_name" {
  value       = local.seeded.alb_dns_name
  description = "Load balancer DNS name (sandbox: from the moto seeding)."
}

output "api_base_url" {
  value       = "http://${var.sandbox.host}:${var.sandbox.app_port}"
  description = "Base URL of the application API (sandbox: the local app server)."
}

output "certificate_arn" {
  value       = local.seeded.certificate_arn
  description = "ACM certificate (sandbox: from the moto seeding)."
}

output "waf_web_acl_arn" {
  value       = local.seeded.waf_web_acl_arn
  description = "WAF web ACL (sandbox: from the moto seeding)."
}
