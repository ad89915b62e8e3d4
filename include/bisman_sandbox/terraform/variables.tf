# The rollout's variables (CONTRACT.md), written to terraform.tfvars from the run's own settings.

variable "project_name" {
  type        = string
  default     = "bisman-erp"
  description = "Prefix of every resource name."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.project_name))
    error_message = "project_name must be 3-32 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "environment" {
  type        = string
  description = "staging or prod."

  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "aws_region" {
  type    = string
  default = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must be an AWS region name such as us-east-1."
  }
}

variable "db_instance_class" {
  type    = string
  default = "db.r6g.large"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.db_instance_class))
    error_message = "db_instance_class must be an RDS instance class such as db.r6g.large."
  }
}

variable "redis_node_type" {
  type    = string
  default = "cache.r6g.large"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "redis_node_type must be an ElastiCache node type such as cache.r6g.large."
  }
}

variable "app_image" {
  type        = string
  description = "Container image of the application, with its tag or digest."

  validation {
    condition     = can(regex("^[^:@\\s]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$", var.app_image))
    error_message = "app_image must name an image with a tag or digest, such as registry/bisman-erp:1.4.2."
  }
}

variable "domain_name" {
  type        = string
  description = "The API's public host name."

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", var.domain_name))
    error_message = "domain_name must be a lowercase DNS name such as api.bisman.example."
  }
}

# Sandbox only: this machine's services and what the moto seeding created. The sandbox sets them in
# the environment of the processes that run Terraform (TF_VAR_sandbox, TF_VAR_sandbox_db_password);
# they are inputs of this machine, never committed.

variable "sandbox" {
  description = "Where the sandbox's services listen, and per environment the ids moto gave the seeded resources."
  type = object({
    host            = string
    app_port        = number
    pgbouncer_port  = number
    redis_port      = number
    db_primary_port = number
    db_replica_port = number
    environments = map(object({
      app_secrets_arn             = string
      alb_arn                     = string
      alb_dns_name                = string
      certificate_arn             = string
      waf_web_acl_arn             = string
      db_security_group_id        = string
      app_security_group_id       = string
      pgbouncer_security_group_id = string
    }))
  })

  validation {
    condition     = contains(keys(var.sandbox.environments), var.environment)
    error_message = "The sandbox has not seeded this environment in moto (var.sandbox.environments has no entry for it)."
  }
}

variable "sandbox_db_password" {
  type        = string
  sensitive   = true
  description = "The database's master password (in AWS: managed by RDS in Secrets Manager)."
}

variable "sandbox_fail_apply" {
  type        = bool
  default     = false
  description = "Sandbox only: fail the apply on purpose after the other resources (tests of a failed apply)."
}
