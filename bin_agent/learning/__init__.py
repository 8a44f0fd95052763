"""The learning loop: capture sorted items, label them, compare models, deploy and roll back."""
