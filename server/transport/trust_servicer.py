"""The gRPC servicer of TrustService: request messages in, service calls, response messages out."""

from google.protobuf import timestamp_pb2

from htk.processes.v1 import trust_service_pb2 as pb
from htk.processes.v1 import trust_service_pb2_grpc as pb_grpc
from server.domain.trust import TrustPolicy, new_policy, organization, parse_policy_id
from server.service.trust import TrustService
from server.transport.interceptors import Context, current_caller


class TrustServicer(pb_grpc.TrustServiceServicer):
    def __init__(self, service: TrustService) -> None:
        self._service = service

    async def CreateTrustPolicy(  # noqa: N802 - gRPC's method name
        self, request: pb.CreateTrustPolicyRequest, context: Context
    ) -> pb.TrustPolicy:
        policy = new_policy(
            name=request.name,
            issuer=request.issuer,
            audience=request.audience,
            subject=request.subject,
            claims=dict(request.claims),
            scopes=list(request.scopes),
            token_ttl_seconds=(
                request.token_ttl_seconds if request.HasField("token_ttl_seconds") else None
            ),
        )
        return _policy(await self._service.create(current_caller().org_id, policy))

    async def ListTrustPolicies(  # noqa: N802
        self, request: pb.ListTrustPoliciesRequest, context: Context
    ) -> pb.ListTrustPoliciesResponse:
        policies = await self._service.list(current_caller().org_id)
        return pb.ListTrustPoliciesResponse(policies=[_policy(policy) for policy in policies])

    async def DeleteTrustPolicy(  # noqa: N802
        self, request: pb.DeleteTrustPolicyRequest, context: Context
    ) -> pb.DeleteTrustPolicyResponse:
        policy_id = parse_policy_id(request.policy_id)
        revoked = await self._service.delete(current_caller().org_id, policy_id)
        return pb.DeleteTrustPolicyResponse(revoked_tokens=revoked)

    async def ExchangeToken(  # noqa: N802
        self, request: pb.ExchangeTokenRequest, context: Context
    ) -> pb.ExchangeTokenResponse:
        exchanged = await self._service.exchange(
            request.subject_token,
            organization(request.organization) if request.HasField("organization") else None,
        )
        expires_at = timestamp_pb2.Timestamp()
        expires_at.FromDatetime(exchanged.expires_at)
        return pb.ExchangeTokenResponse(
            token=exchanged.token,
            expires_at=expires_at,
            scopes=sorted(exchanged.scopes),
            name=exchanged.name,
        )


def _policy(policy: TrustPolicy) -> pb.TrustPolicy:
    created_at = timestamp_pb2.Timestamp()
    created_at.FromDatetime(policy.created_at)
    return pb.TrustPolicy(
        policy_id=str(policy.policy_id),
        name=policy.name,
        issuer=policy.issuer,
        audience=policy.audience,
        subject=policy.subject,
        claims=dict(policy.claims),
        scopes=sorted(policy.scopes),
        token_ttl_seconds=policy.token_ttl_seconds,
        created_at=created_at,
    )
