"""Help layout shared by the ``faceptor-hf`` parsers."""

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except for required options and help texts that already state a default."""

    def _get_help_string(self, action):
        if action.required or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
