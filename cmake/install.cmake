# Placeholder: the infra helper owns this file.
