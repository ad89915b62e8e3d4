# The sandbox's Terraform configuration: the BISMAN ERP production stack as Terraform would manage it
# in AWS, one built-in `terraform_data` resource standing for each AWS resource (its `input` holds the
# arguments the AWS resource would take, `aws_type` names it), so that real Terraform plans, locks,
# replaces and applies it offline. The outputs point at the sandbox's local services.

terraform {
  required_version = ">= 1.5.0"

  # Partial configuration: bucket, key, region, dynamodb_table (and, against an emulator, endpoints)
  # come from `terraform init -backend-config=...`, given by bisman_ops.clients.terraform for the
  # environment being changed. Nothing here names an environment's state.
  backend "s3" {}
}
