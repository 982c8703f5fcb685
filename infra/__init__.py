"""Infrastructure: the embedded local stack (infra.local) and, later, CloudFormation for AWS."""
