// Microsoft's JavaScript clients (msal-node, @azure/identity, @microsoft/microsoft-graph-client)
// against the Graph emulator, used unchanged and only pointed at it: msal-node through
// `knownAuthorities` (it has no `disableInstanceDiscovery`), @azure/identity through
// `authorityHost` with instance discovery off, the Graph client through `baseUrl` and
// `customHosts`; the CA comes from NODE_EXTRA_CA_CERTS. Run by scripts/test-node-clients.sh,
// which starts the emulator and sets the EMU_* variables.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const { test } = require("node:test");

const msal = require("@azure/msal-node");
const { ClientCertificateCredential, ClientSecretCredential } = require("@azure/identity");
const {
  BatchRequestContent,
  BatchResponseContent,
  Client,
  GraphError,
  PageIterator,
  RetryHandlerOptions,
} = require("@microsoft/microsoft-graph-client");
const {
  TokenCredentialAuthenticationProvider,
} = require("@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials");

const BASE = process.env.EMU_BASE_URL;
const TENANT = process.env.EMU_TENANT;
const USERS = Number(process.env.EMU_USERS);
const CERT = fs.readFileSync(process.env.EMU_CERT, "ascii");
const KEY = fs.readFileSync(process.env.EMU_KEY, "ascii");
const APP_ID = "11111111-1111-4111-8111-111111111111";
const SECRET = "rw-secret~value.1";
const SCOPE = "https://graph.microsoft.com/.default";
const ANNA = "a0000000-0000-4000-8000-000000000001";
const CARL = "a0000000-0000-4000-8000-000000000003";
const PAUL = "a0000000-0000-4000-8000-000000000008";
const HOST = new URL(BASE).host;

const identityOptions = { authorityHost: BASE, disableInstanceDiscovery: true };

function msalApp(credential) {
  return new msal.ConfidentialClientApplication({
    auth: { clientId: APP_ID, authority: `${BASE}/${TENANT}`, knownAuthorities: [HOST], ...credential },
  });
}

/** A Graph client on the emulator, with the default middleware (RetryHandler included). */
function graphClient() {
  const credential = new ClientSecretCredential(TENANT, APP_ID, SECRET, identityOptions);
  return Client.initWithMiddleware({
    authProvider: new TokenCredentialAuthenticationProvider(credential, { scopes: [SCOPE] }),
    baseUrl: `${BASE}/`,
    defaultVersion: "v1.0",
    customHosts: new Set([new URL(BASE).hostname]),
  });
}

/** The control API (no token). */
async function control(method, path, body) {
  const response = await fetch(`${BASE}/_emulator${path}`, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status}`);
  return response.status === 204 ? null : response.json();
}

async function graphErrorOf(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof GraphError, `not a GraphError: ${error}`);
    return error;
  }
  assert.fail("the request succeeded");
}

test("msal-node: a token by client secret", async () => {
  const result = await msalApp({ clientSecret: SECRET }).acquireTokenByClientCredential({ scopes: [SCOPE] });
  assert.ok(result.accessToken);
  assert.equal(result.tokenType, "Bearer");
});

test("msal-node: a token by certificate (SHA-256 thumbprint, PS256)", async () => {
  const thumbprintSha256 = new crypto.X509Certificate(CERT).fingerprint256.replaceAll(":", "");
  const app = msalApp({ clientCertificate: { thumbprintSha256, privateKey: KEY } });
  const result = await app.acquireTokenByClientCredential({ scopes: [SCOPE] });
  assert.ok(result.accessToken);
});

test("msal-node: a wrong secret reports AADSTS7000215", async () => {
  await assert.rejects(
    msalApp({ clientSecret: "wrong" }).acquireTokenByClientCredential({ scopes: [SCOPE] }),
    (error) => String(error.errorMessage || error.message).includes("AADSTS7000215"),
  );
});

test("@azure/identity: tokens by secret and by certificate", async () => {
  const secret = new ClientSecretCredential(TENANT, APP_ID, SECRET, identityOptions);
  assert.ok((await secret.getToken(SCOPE)).token);
  const certificate = new ClientCertificateCredential(
    TENANT,
    APP_ID,
    { certificatePath: process.env.EMU_CERT_AND_KEY },
    identityOptions,
  );
  assert.ok((await certificate.getToken(SCOPE)).token);
});

test("graph client: PageIterator pages through every user", async () => {
  const client = graphClient();
  const first = await client.api("/users").select("id,mail").top(7).get();
  assert.ok(first["@odata.nextLink"]);
  const ids = [];
  await new PageIterator(client, first, (user) => {
    ids.push(user.id);
    return true;
  }).iterate();
  assert.equal(ids.length, USERS);
  assert.equal(new Set(ids).size, USERS);
});

test("graph client: a missing user is a GraphError 404", async () => {
  const error = await graphErrorOf(graphClient().api("/users/nobody@contoso.example").get());
  assert.equal(error.statusCode, 404);
  assert.equal(error.code, "Request_ResourceNotFound");
});

test("graph client: an advanced query needs ConsistencyLevel", async () => {
  const query = (client) => client.api("/users").filter("endsWith(mail,'@partner.example')").count(true);
  const answer = await query(graphClient()).header("ConsistencyLevel", "eventual").get();
  assert.ok(answer["@odata.count"] > 0);
  assert.ok(answer.value.every((user) => user.mail.endsWith("@partner.example")));
  const error = await graphErrorOf(query(graphClient()).get());
  assert.equal(error.statusCode, 400);
  assert.equal(error.code, "Request_UnsupportedQuery");
});

test("graph client: PATCH refusals are GraphErrors", async () => {
  const client = graphClient();
  const mastered = await graphErrorOf(client.api(`/users/${ANNA}`).patch({ mail: "anna.node@partner.example" }));
  assert.equal(mastered.statusCode, 400);
  assert.equal(mastered.code, "Request_BadRequest");
  assert.match(mastered.message, /on-premises mastered Directory Sync objects/);
  const readOnly = await graphErrorOf(client.api(`/users/${CARL}`).patch({ proxyAddresses: [] }));
  assert.equal(readOnly.statusCode, 400);
});

test("graph client: a conversion invitation, acceptance and a delta round", async () => {
  const client = graphClient();
  // The first delta round, to its deltaLink.
  let page = await client.api("/users/delta").select("id,externalUserState").get();
  while (page["@odata.nextLink"]) {
    page = await client.api(page["@odata.nextLink"]).get();
  }
  const deltaLink = page["@odata.deltaLink"];
  assert.ok(deltaLink);

  await client.api(`/users/${PAUL}`).patch({ otherMails: ["paul.node@partner.example"] });
  const invitation = await client.api("/invitations").post({
    invitedUserEmailAddress: "paul.node@partner.example",
    inviteRedirectUrl: "https://myapps.microsoft.com",
    sendInvitationMessage: false,
    invitedUser: { id: PAUL },
  });
  assert.equal(invitation.invitedUser.id, PAUL);
  assert.equal(invitation.status, "PendingAcceptance");
  await control("POST", `/users/${PAUL}/accept`);
  const user = await client.api(`/users/${PAUL}`).select("externalUserState").get();
  assert.equal(user.externalUserState, "Accepted");

  // The next round names Paul, accepted.
  page = await client.api(deltaLink).get();
  const changed = [...page.value];
  while (page["@odata.nextLink"]) {
    page = await client.api(page["@odata.nextLink"]).get();
    changed.push(...page.value);
  }
  assert.ok(page["@odata.deltaLink"]);
  const paul = changed.find((u) => u.id === PAUL);
  assert.equal(paul?.externalUserState, "Accepted");
});

test("graph client: a $batch through BatchRequestContent", async () => {
  const client = graphClient();
  const request = (method, path, body) =>
    new Request(`${BASE}/v1.0${path}`, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
  const content = new BatchRequestContent([
    { id: "get", request: request("GET", `/users/${ANNA}`) },
    { id: "patch", request: request("PATCH", `/users/${CARL}`, { jobTitle: "Batched by Node" }) },
    { id: "missing", request: request("GET", "/users/nobody@contoso.example") },
  ]);
  const answer = new BatchResponseContent(await client.api("/$batch").post(await content.getContent()));
  assert.equal(answer.getResponseById("get").status, 200);
  assert.equal((await answer.getResponseById("get").json()).id, ANNA);
  assert.equal(answer.getResponseById("patch").status, 204);
  assert.equal(answer.getResponseById("missing").status, 404);
  const carl = await client.api(`/users/${CARL}`).select("jobTitle").get();
  assert.equal(carl.jobTitle, "Batched by Node");
});

test("graph client: RetryHandler completes a throttled burst of invitations", async () => {
  // Windows half as long: the invitation manager allows 150 per 2.5 s, so a burst of 180
  // sent at once is throttled however busy the machine is, and a 429's Retry-After is the
  // real value (whole seconds) times 0.5 in fractional form ("2.500"), which the client
  // parses with Number() and honours.
  await control("POST", "/time-scale", { timeScale: 0.5 });
  await control("POST", "/throttle/reset");
  await control("DELETE", "/requests");
  const client = graphClient();
  // Up to 10 retries (3 by default); the delay applies only without Retry-After.
  const retries = [new RetryHandlerOptions(1, 10)];
  const burst = Array.from({ length: 180 }, (_, i) =>
    client.api("/invitations").middlewareOptions(retries).post({
      invitedUserEmailAddress: `node.guest${i}@fabrikam.example`,
      inviteRedirectUrl: "https://myapps.microsoft.com",
    }),
  );
  const invitations = await Promise.all(burst);
  assert.equal(invitations.length, 180);
  assert.ok(invitations.every((invitation) => invitation.status === "PendingAcceptance"));
  const log = await control("GET", "/requests");
  const posts = log.value.filter((r) => r.path === "/v1.0/invitations");
  const refused = posts.filter((r) => r.status === 429).length;
  assert.ok(refused > 0, "the burst was throttled");
  assert.equal(posts.filter((r) => r.status === 201).length, 180);
  await control("POST", "/time-scale", { timeScale: 1 });
});
