"""Deploy kvs-analytics to AWS: `python -m infra.aws deploy|outputs|config --stack NAME`.

`stack` creates or updates the CloudFormation stack of `infra/cloudformation/kvs-analytics.yaml`
with boto3 and follows its events; `consumer_config` turns the stack's outputs into a consumer
configuration (`consumer.config.Config`); `cli` is the command line.
"""

from .consumer_config import consumer_config, consumer_config_yaml
from .stack import DEFAULT_TEMPLATE, DeployError, ParameterError, StackClient, deploy, stack_outputs

__all__ = ["DEFAULT_TEMPLATE", "DeployError", "ParameterError", "StackClient", "consumer_config",
           "consumer_config_yaml", "deploy", "stack_outputs"]
