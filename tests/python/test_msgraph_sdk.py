"""Microsoft's own Python clients (msal, azure-identity, msgraph-sdk) against the Graph emulator.

The libraries are used unchanged; they are only pointed at the emulator: the authority is
the emulator's base URL with instance discovery off, the CA comes from SSL_CERT_FILE /
REQUESTS_CA_BUNDLE, the Graph base URL is the emulator's /v1.0 and the emulator's host is an
allowed host for kiota's token provider. Run by scripts/test-python-clients.sh, which starts
the emulator and sets the EMU_* variables.
"""

import asyncio
import os
import unittest
from urllib.parse import urlparse

import httpx
import msal
from azure.identity import CertificateCredential, ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.invitation import Invitation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.user import User
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core import GraphClientFactory
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

BASE = os.environ["EMU_BASE_URL"]
TENANT = os.environ["EMU_TENANT"]
CA = os.environ["EMU_CA"]
CERT = os.environ["EMU_CERT"]
KEY = os.environ["EMU_KEY"]
CERT_AND_KEY = os.environ["EMU_CERT_AND_KEY"]
USERS = int(os.environ["EMU_USERS"])
APP_ID = "11111111-1111-4111-8111-111111111111"
SECRET = "rw-secret~value.1"
SCOPE = "https://graph.microsoft.com/.default"
CARL = "a0000000-0000-4000-8000-000000000003"
ANNA = "a0000000-0000-4000-8000-000000000001"


def read(path):
    with open(path, encoding="ascii") as f:
        return f.read()


def graph_client(credential):
    """A GraphServiceClient on the emulator: kiota's Azure provider + msgraph-core's client."""
    host = urlparse(BASE).hostname
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[SCOPE], allowed_hosts=[host])
    http_client = GraphClientFactory.create_with_default_middleware()
    adapter = GraphRequestAdapter(auth, http_client)
    adapter.base_url = f"{BASE}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def secret_credential():
    return ClientSecretCredential(TENANT, APP_ID, SECRET, authority=BASE, disable_instance_discovery=True)


class MsalTokens(unittest.TestCase):
    def app(self, credential):
        return msal.ConfidentialClientApplication(
            APP_ID,
            client_credential=credential,
            authority=f"{BASE}/{TENANT}",
            instance_discovery=False,
        )

    def test_msal_client_secret(self):
        result = self.app(SECRET).acquire_token_for_client(scopes=[SCOPE])
        self.assertIn("access_token", result, result)
        self.assertEqual(result["token_type"], "Bearer")

    def test_msal_certificate_sha1_thumbprint_rs256(self):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        thumbprint = x509.load_pem_x509_certificate(read(CERT).encode()).fingerprint(hashes.SHA1()).hex()
        result = self.app({"private_key": read(KEY), "thumbprint": thumbprint}).acquire_token_for_client(scopes=[SCOPE])
        self.assertIn("access_token", result, result)

    def test_msal_certificate_sha256_ps256(self):
        credential = {"private_key": read(KEY), "public_certificate": read(CERT)}
        result = self.app(credential).acquire_token_for_client(scopes=[SCOPE])
        self.assertIn("access_token", result, result)

    def test_msal_wrong_secret_reports_aadsts7000215(self):
        result = self.app("wrong").acquire_token_for_client(scopes=[SCOPE])
        self.assertEqual(result.get("error"), "invalid_client", result)
        self.assertIn(7000215, result.get("error_codes", []))


class AzureIdentityTokens(unittest.TestCase):
    def test_client_secret_credential(self):
        token = secret_credential().get_token(SCOPE)
        self.assertTrue(token.token)

    def test_certificate_credential(self):
        credential = CertificateCredential(
            TENANT, APP_ID, certificate_path=CERT_AND_KEY, authority=BASE, disable_instance_discovery=True
        )
        self.assertTrue(credential.get_token(SCOPE).token)


class GraphSdk(unittest.IsolatedAsyncioTestCase):
    async def test_list_users_across_pages(self):
        client = graph_client(secret_credential())
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=["id", "mail"], top=7)
        page = await client.users.get(request_configuration=RequestConfiguration(query_parameters=query))
        ids, pages = [], 0
        while page is not None:
            pages += 1
            ids.extend(user.id for user in page.value)
            page = await client.users.with_url(page.odata_next_link).get() if page.odata_next_link else None
        self.assertEqual(len(ids), USERS)
        self.assertEqual(len(set(ids)), USERS)
        self.assertGreater(pages, 1)

    async def test_get_user_with_select(self):
        client = graph_client(secret_credential())
        query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id", "otherMails", "onPremisesSyncEnabled", "externalUserState"]
        )
        user = await client.users.by_user_id(ANNA).get(request_configuration=RequestConfiguration(query_parameters=query))
        self.assertEqual(user.id, ANNA)
        self.assertTrue(user.on_premises_sync_enabled)
        self.assertIsNone(user.external_user_state)
        self.assertIsNone(user.display_name)

    async def test_missing_user_is_an_odata_error(self):
        client = graph_client(secret_credential())
        with self.assertRaises(ODataError) as raised:
            await client.users.by_user_id("nobody@contoso.example").get()
        self.assertEqual(raised.exception.error.code, "Request_ResourceNotFound")
        self.assertEqual(raised.exception.response_status_code, 404)

    async def test_patch_other_mails_invite_accept(self):
        client = graph_client(secret_credential())
        await client.users.by_user_id(CARL).patch(User(other_mails=["carl.sdk@partner.example"]))
        query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["otherMails", "externalUserState"])
        config = RequestConfiguration(query_parameters=query)
        user = await client.users.by_user_id(CARL).get(request_configuration=config)
        self.assertEqual(user.other_mails, ["carl.sdk@partner.example"])

        invitation = await client.invitations.post(
            Invitation(
                invited_user_email_address="carl.sdk@partner.example",
                invite_redirect_url="https://myapps.microsoft.com",
                send_invitation_message=False,
                invited_user=User(id=CARL),
            )
        )
        self.assertEqual(invitation.invited_user.id, CARL)
        self.assertEqual(invitation.status, "PendingAcceptance")
        user = await client.users.by_user_id(CARL).get(request_configuration=config)
        self.assertEqual(user.external_user_state, "PendingAcceptance")

        async with httpx.AsyncClient(verify=CA) as control:
            accepted = await control.post(f"{BASE}/_emulator/users/{CARL}/accept")
            self.assertEqual(accepted.status_code, 200, accepted.text)
        user = await client.users.by_user_id(CARL).get(request_configuration=config)
        self.assertEqual(user.external_user_state, "Accepted")

    async def test_batch_with_msgraph_core(self):
        client = graph_client(secret_credential())
        content = BatchRequestContent()
        requests = {
            "get": client.users.by_user_id(ANNA).to_get_request_information(),
            "patch": client.users.by_user_id(CARL).to_patch_request_information(User(job_title="Batched by the SDK")),
            "missing": client.users.by_user_id("nobody@contoso.example").to_get_request_information(),
        }
        for request_id, info in requests.items():
            content.add_request(None, BatchRequestItem(request_information=info, id=request_id))
        response = await client.batch.post(batch_request_content=content)
        self.assertEqual(response.get_response_status_codes(), {"get": 200, "patch": 204, "missing": 404})
        # BatchResponseContent.response_body() is not used: msgraph-core 1.5.2 passes a BytesIO
        # where kiota-serialization-json expects bytes, so it fails before reading the content.
        self.assertEqual(response.get_response_by_id("missing").status, 404)
        user = await client.users.by_user_id(CARL).get()
        self.assertEqual(user.job_title, "Batched by the SDK")


if __name__ == "__main__":
    unittest.main(verbosity=2)
