"""Encryption at rest for secrets and user tokens (Fernet, keyed by ENCRYPTION_KEY)."""

from cryptography.fernet import Fernet, InvalidToken


class DecryptionError(Exception):
    pass


class Crypto:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError("stored value cannot be decrypted: ENCRYPTION_KEY changed?") from exc
