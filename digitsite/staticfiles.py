"""The production static files storage: whitenoise's compressed files with content-hashed names."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class HashedStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """Also rewrites JavaScript module imports to the hashed names.

    Without it the hashed main.js would import "./api.js" by its plain name, so a browser could
    mix a new page script with a cached old module right after a deploy.
    """

    support_js_module_import_aggregation = True
