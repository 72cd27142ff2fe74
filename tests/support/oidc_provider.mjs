// A real OpenID provider (the npm package oidc-provider, a certified one) on
// 127.0.0.1 for the dashboard's sign-in browser test. Its development login
// page takes any login and password; the account is the login, with the
// claims the test gives (name, email, organization, groups).
//
// node tests/support/oidc_provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI CLAIMS_JSON
// prints "ready" once it listens; stops on SIGTERM.
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri, claimsJson] = process.argv.slice(2);
const claims = JSON.parse(claimsJson);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  // The organization and groups ride along with `openid`, into the ID token.
  claims: { openid: ["sub", "org", "groups"], profile: ["name"], email: ["email"] },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
provider.proxy = false;
const server = provider.listen(Number(port), "127.0.0.1", () => console.log("ready"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
