"""The admin requests aiokafka's admin client lacks: SCRAM users, ACLs and open transactions, over its connection.

aiokafka 0.14 ships the wire structs of CreateAcls/DeleteAcls but no admin methods for them,
and nothing for AlterUserScramCredentials (KIP-554), so provisioning a tenant needed either a
JVM with Kafka's admin tools or these few lines. They work against any cluster the settings
point at (the caller must be allowed ALTER on the cluster, e.g. a super user).

The client sends the salted password, never the password: ``Hi(password, salt, i)`` of
RFC 5802, which is PBKDF2-HMAC with the mechanism's hash.

>>> salted_password("pencil", b"salt", 4096, "SCRAM-SHA-256").hex()[:16]
'0997564f29292327'
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (CompactArray, CompactBytes, CompactString, Int8, Int16, Int32, Int64, Schema,
                                     TaggedFields)

#: Kafka's codes for the SCRAM mechanisms (ScramMechanism.java).
SCRAM_MECHANISMS = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
SCRAM_ITERATIONS = 8192  # brokers accept 4096..16384

# AclOperation, ResourceType, PatternType, AclPermissionType codes (org.apache.kafka.common.acl).
OPERATIONS = {"ANY": 1, "ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7, "DESCRIBE": 8}
RESOURCE_ANY, RESOURCE_TOPIC, RESOURCE_GROUP = 1, 2, 3
PATTERN_ANY, PATTERN_LITERAL, PATTERN_PREFIXED = 1, 3, 4
PERMISSION_ANY, PERMISSION_ALLOW = 1, 3


#: The error code of deleting a SCRAM credential or ACL that does not exist.
RESOURCE_NOT_FOUND = 91


class KafkaAdminError(RuntimeError):
    """The broker refused an admin request (Kafka error ``code``); the message has its name and text."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class AlterUserScramCredentialsResponse_v0(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(("user", CompactString("utf-8")), ("error_code", Int16),
                                 ("error_message", CompactString("utf-8")), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        ("deletions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields))),
        ("upsertions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("iterations", Int32),
                                    ("salt", CompactBytes), ("salted_password", CompactBytes), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentials(Request[AlterUserScramCredentialsRequest_v0]):
    """Upsert one user's credential (``password`` given) or delete it (``password`` None)."""

    API_KEY = 51

    def __init__(self, user: str, mechanism: str, password: str | None):
        self.user, self.mechanism, self.password = user, SCRAM_MECHANISMS[mechanism], password
        self.mechanism_name = mechanism

    def build(self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]) -> AlterUserScramCredentialsRequest_v0:
        if self.password is None:
            return request_struct_class([(self.user, self.mechanism, {})], [], {})
        salt = secrets.token_bytes(32)
        salted = salted_password(self.password, salt, SCRAM_ITERATIONS, self.mechanism_name)
        return request_struct_class([], [(self.user, self.mechanism, SCRAM_ITERATIONS, salt, salted, {})], {})


class ListTransactionsResponse_v0(Response):
    API_KEY = 66
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("unknown_state_filters", CompactArray(CompactString("utf-8"))),
        ("transaction_states", CompactArray(("transactional_id", CompactString("utf-8")), ("producer_id", Int64),
                                            ("transaction_state", CompactString("utf-8")), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class ListTransactionsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 66
    API_VERSION = 0
    RESPONSE_TYPE = ListTransactionsResponse_v0
    SCHEMA = Schema(
        ("state_filters", CompactArray(CompactString("utf-8"))),
        ("producer_id_filters", CompactArray(Int64)),
        ("tags", TaggedFields),
    )


class ListTransactions(Request[ListTransactionsRequest_v0]):
    """The transactions a broker coordinates that are in one of ``states`` (KIP-664)."""

    API_KEY = 66

    def __init__(self, states: list[str]):
        self.states = states

    def build(self, request_struct_class: type[ListTransactionsRequest_v0]) -> ListTransactionsRequest_v0:
        return request_struct_class(self.states, [], {})


def salted_password(password: str, salt: bytes, iterations: int, mechanism: str) -> bytes:
    """RFC 5802's ``Hi(password, salt, iterations)`` with the hash of ``mechanism``."""
    digest = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    return hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)


@dataclass(frozen=True)
class Acl:
    """An ALLOW rule: ``principal`` may do ``operation`` on topics or groups named (or prefixed) ``name``."""

    principal: str
    operation: str
    name: str
    resource: int = RESOURCE_TOPIC
    pattern: int = PATTERN_PREFIXED


async def set_scram_credential(admin: AIOKafkaAdminClient, user: str, mechanism: str, password: str | None) -> None:
    """Create or replace ``user``'s SCRAM credential, or delete it (``password`` None)."""
    response = await admin._send_request(AlterUserScramCredentials(user, mechanism, password))
    for _user, code, message, _tags in response.results:
        _raise_for(code, message, f"SCRAM credential of {user!r}")


async def create_acls(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    """Add ALLOW ACLs (any host)."""
    for acl in acls:
        request = CreateAclsRequest(acl.resource, acl.name, acl.pattern, acl.principal, "*",
                                    OPERATIONS[acl.operation], PERMISSION_ALLOW)
        response = await admin._send_request(request)
        for code, message in response.creation_responses:
            _raise_for(code, message, f"ACL {acl}")


async def delete_acls_of(admin: AIOKafkaAdminClient, principal: str) -> int:
    """Remove every ACL of ``principal``; returns how many there were."""
    request = DeleteAclsRequest(RESOURCE_ANY, None, PATTERN_ANY, principal, None, OPERATIONS["ANY"], PERMISSION_ANY)
    response = await admin._send_request(request)
    removed = 0
    for code, message, matching in response.filter_responses:
        _raise_for(code, message, f"ACLs of {principal!r}")
        removed += len(matching)
    return removed


async def open_transactions(admin: AIOKafkaAdminClient) -> set[str]:
    """The transactional ids with a transaction open (state ``Ongoing``) on any broker of the cluster
    (each broker coordinates some; the caller needs DESCRIBE on the ids it is to see)."""
    found: set[str] = set()
    for broker in admin._client.cluster.brokers():
        response = await admin._send_request(ListTransactions(["Ongoing"]), broker.nodeId)
        _raise_for(response.error_code, None, f"open transactions on broker {broker.nodeId}")
        found.update(transactional_id for transactional_id, _producer, _state, _tags in response.transaction_states)
    return found


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        raise KafkaAdminError(f"{what}: {for_code(code).__name__}: {message or ''}".rstrip(": "), code)
