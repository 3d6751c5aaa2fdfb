"""Credentials stay where the user keeps them.

A URL with a user name and password in it (``http://user:secret@host``,
``s3://key:secret@bucket``) or a signed query (``?X-Amz-Signature=...``,
``?token=...``) would become a flow parameter, a logged value or a file, and
stay there. Such values are refused, with the message saying where the
credentials go instead; the message shows the URL with the secret part
hidden.
"""

from __future__ import annotations

import urllib.parse

from mirnet_pipeline.tasks.errors import UsageError

# query parameters that carry a secret (compared in lower case)
SECRET_QUERY = {"x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "sig", "token",
                "access_token", "password", "secret", "api_key", "apikey"}
S3_CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials"
WHERE = (f"give credentials the usual way instead: for S3, {S3_CREDENTIALS}; for an MLflow server, "
         "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; for a download, a ~/.netrc entry")


class CredentialsInParameter(UsageError):
    """A value that carries credentials; the message hides them."""


def _hidden(parts: urllib.parse.SplitResult) -> str:
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    query = "&".join(f"{name}=***" if name.lower() in SECRET_QUERY else f"{name}={value}"
                     for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def carries_credentials(value: str) -> str | None:
    """``value`` with its secret hidden when it is a URL that carries
    credentials, else None."""
    if "://" not in value:
        return None
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return None
    names = {name.lower() for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
    if "@" in parts.netloc or names & SECRET_QUERY:
        return _hidden(parts)
    return None


def check_no_credentials(name: str, value) -> None:
    """``CredentialsInParameter`` naming ``name`` when ``value`` carries credentials."""
    if isinstance(value, str) and (hidden := carries_credentials(value)) is not None:
        raise CredentialsInParameter(f"{name}: {hidden} carries credentials, which would be kept with the job's "
                                     f"parameters and logs; {WHERE}")
