"""A minimal Django project that runs django-jobs for the benchmark."""
