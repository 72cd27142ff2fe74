"""The gRPC servicer of SignInService: request messages in, service calls, response messages out."""

from google.protobuf import timestamp_pb2

from htk.processes.v1 import sign_in_service_pb2 as pb
from htk.processes.v1 import sign_in_service_pb2_grpc as pb_grpc
from server.service.sign_in import SignInService
from server.transport.interceptors import Context


class SignInServicer(pb_grpc.SignInServiceServicer):
    def __init__(self, service: SignInService) -> None:
        self._service = service

    async def GetSignInProvider(  # noqa: N802 - gRPC's method name
        self, request: pb.GetSignInProviderRequest, context: Context
    ) -> pb.SignInProvider:
        name = self._service.provider_name()
        return pb.SignInProvider(enabled=name is not None, name=name or "")

    async def StartSignIn(  # noqa: N802
        self, request: pb.StartSignInRequest, context: Context
    ) -> pb.StartSignInResponse:
        url = await self._service.start(request.redirect_uri)
        return pb.StartSignInResponse(authorization_url=url)

    async def FinishSignIn(  # noqa: N802
        self, request: pb.FinishSignInRequest, context: Context
    ) -> pb.FinishSignInResponse:
        signed_in = await self._service.finish(request.code, request.state, request.redirect_uri)
        expires_at = timestamp_pb2.Timestamp()
        expires_at.FromDatetime(signed_in.expires_at)
        return pb.FinishSignInResponse(
            token=signed_in.token,
            expires_at=expires_at,
            name=signed_in.person.name,
            organization=signed_in.person.org_id,
            scopes=sorted(signed_in.person.scopes),
        )

    async def SignOut(  # noqa: N802
        self, request: pb.SignOutRequest, context: Context
    ) -> pb.SignOutResponse:
        await self._service.sign_out(request.token)
        return pb.SignOutResponse()
