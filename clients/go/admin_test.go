package htk_test

// WebhookService and TrustService through the client, against the htk the
// environment names (see htk_test.go) with two more tokens of the same
// organization: HTK_WEBHOOKS_TOKEN (scope webhooks:manage) and
// HTK_TRUST_TOKEN (tokens:manage). The stack must allow webhooks to
// loopback URLs (HTK_WEBHOOK_ALLOW_PRIVATE=1): the webhooks made here point
// at 127.0.0.1, and at a namespace no process uses, so nothing is sent.

import (
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	processesv1 "htk.dev/client/go/gen/htk/processes/v1"
)

var webhooksToken, trustToken = os.Getenv("HTK_WEBHOOKS_TOKEN"), os.Getenv("HTK_TRUST_TOKEN")

// requireToken fails a test that needs a token the environment does not name.
func requireToken(t *testing.T, name, value string) string {
	t.Helper()
	if value == "" {
		t.Fatalf("set %s to run this test against a running htk", name)
	}
	return value
}

// assertInvalidField checks that err is INVALID_ARGUMENT naming field in its
// message and in its BadRequest detail, as every refused input is.
func assertInvalidField(t *testing.T, err error, field string) {
	t.Helper()
	refusal := status.Convert(err)
	if refusal.Code() != codes.InvalidArgument || !strings.Contains(refusal.Message(), field) {
		t.Fatalf("want INVALID_ARGUMENT naming %q, got %v", field, err)
	}
	for _, detail := range refusal.Details() {
		if request, ok := detail.(*errdetails.BadRequest); ok && len(request.FieldViolations) > 0 &&
			request.FieldViolations[0].Field == field {
			return
		}
	}
	t.Fatalf("want a BadRequest naming %q, got %v", field, refusal.Details())
}

func TestAWebhookIsCreatedReadListedAndDeleted(t *testing.T) {
	client, ctx := dial(t, requireToken(t, "HTK_WEBHOOKS_TOKEN", webhooksToken)), callContext(t)
	description := uniqueName("go client")
	created, err := client.Webhooks.CreateWebhook(ctx, &processesv1.CreateWebhookRequest{
		Url:         "http://127.0.0.1:9/htk",
		Events:      []string{"task.opened", "process.failed"},
		Namespace:   ptr(uniqueName("go-client-hooks")),
		Description: ptr(description),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.GetSecret(), "whsec_") || !created.Enabled || created.GetDescription() != description {
		t.Fatalf("a new webhook is enabled and carries its secret, got %v", created)
	}

	read, err := client.Webhooks.GetWebhook(ctx, &processesv1.GetWebhookRequest{WebhookId: created.WebhookId})
	if err != nil {
		t.Fatal(err)
	}
	if read.Secret != nil || read.Url != created.Url || !slices.Equal(read.Events, created.Events) {
		t.Fatalf("the webhook reads back without its secret, got %v", read)
	}

	listed, err := client.Webhooks.ListWebhooks(ctx, &processesv1.ListWebhooksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	index := slices.IndexFunc(listed.Webhooks, func(hook *processesv1.Webhook) bool { return hook.WebhookId == created.WebhookId })
	if index < 0 || listed.Webhooks[index].Secret != nil {
		t.Fatalf("the list holds the webhook without its secret, got %v", listed)
	}

	deleted, err := client.Webhooks.DeleteWebhook(ctx, &processesv1.DeleteWebhookRequest{WebhookId: created.WebhookId})
	if err != nil {
		t.Fatal(err)
	}
	if deleted.WebhookId != created.WebhookId {
		t.Fatalf("the deleted webhook comes back, got %v", deleted)
	}
	_, err = client.Webhooks.GetWebhook(ctx, &processesv1.GetWebhookRequest{WebhookId: created.WebhookId})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("a deleted webhook is gone, got %v", err)
	}
}

func TestAWebhookWithABadURLIsRefusedNamingTheField(t *testing.T) {
	client, ctx := dial(t, requireToken(t, "HTK_WEBHOOKS_TOKEN", webhooksToken)), callContext(t)
	_, err := client.Webhooks.CreateWebhook(ctx, &processesv1.CreateWebhookRequest{
		Url: "ftp://127.0.0.1/htk", Events: []string{"*"},
	})
	assertInvalidField(t, err, "url")
}

func TestWebhooksNeedTheScopeWebhooksManage(t *testing.T) {
	// The token that drives processes has no business reading where events go.
	client, ctx := dial(t, token), callContext(t)
	_, err := client.Webhooks.ListWebhooks(ctx, &processesv1.ListWebhooksRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("want PERMISSION_DENIED, got %v", err)
	}
}

func TestATrustPolicyIsCreatedListedAndDeleted(t *testing.T) {
	client, ctx := dial(t, requireToken(t, "HTK_TRUST_TOKEN", trustToken)), callContext(t)
	name := uniqueName("go client main")
	created, err := client.Trust.CreateTrustPolicy(ctx, &processesv1.CreateTrustPolicyRequest{
		Name:            name,
		Issuer:          "https://token.actions.githubusercontent.com",
		Audience:        "htk",
		Subject:         "repo:acme/app:ref:refs/heads/main",
		Claims:          map[string]string{"repository_owner": "acme"},
		Scopes:          []string{"processes:write"},
		TokenTtlSeconds: ptr[int32](300),
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.Name != name || created.TokenTtlSeconds != 300 || created.Claims["repository_owner"] != "acme" ||
		!slices.Equal(created.Scopes, []string{"processes:write"}) {
		t.Fatalf("the policy comes back as asked, got %v", created)
	}

	listed, err := client.Trust.ListTrustPolicies(ctx, &processesv1.ListTrustPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(listed.Policies, func(policy *processesv1.TrustPolicy) bool { return policy.PolicyId == created.PolicyId }) {
		t.Fatalf("the list holds the policy, got %v", listed)
	}

	deleted, err := client.Trust.DeleteTrustPolicy(ctx, &processesv1.DeleteTrustPolicyRequest{PolicyId: created.PolicyId})
	if err != nil {
		t.Fatal(err)
	}
	if deleted.RevokedTokens != 0 {
		t.Fatalf("a policy never exchanged revokes no token, got %v", deleted)
	}
	_, err = client.Trust.DeleteTrustPolicy(ctx, &processesv1.DeleteTrustPolicyRequest{PolicyId: created.PolicyId})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("a deleted policy is gone, got %v", err)
	}
}

func TestATrustPolicyForAnIssuerWithoutTLSIsRefusedNamingTheField(t *testing.T) {
	client, ctx := dial(t, requireToken(t, "HTK_TRUST_TOKEN", trustToken)), callContext(t)
	_, err := client.Trust.CreateTrustPolicy(ctx, &processesv1.CreateTrustPolicyRequest{
		Name: uniqueName("go client"), Issuer: "http://ci.example.com", Audience: "htk", Subject: "repo:acme/app:*",
	})
	assertInvalidField(t, err, "issuer")
}
