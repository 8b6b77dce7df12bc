"""Subcommands of `ccr-webhook`, one module each, registered in webhook.cli.COMMAND_MODULES."""
