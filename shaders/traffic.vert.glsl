#version 150
// Tensor traffic on the roads: chevrons drive along a lane, pointing the way they go. A lane
// with N chevrons cycling `rate / N` times a second passes `rate` chevrons a second by any
// point, so the flow of chevrons is the link's hop rate (times the legend's scale).
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform float u_time;
in vec4 p3d_Vertex;   // the chevron in its own frame: x forward, y to the left
in vec4 i_from;       // xyz: lane start; w: this chevron's phase, k / N
in vec4 i_to;         // xyz: lane end; w: cycles per second, rate / N
in vec4 i_color;      // rgb; a: chevron size
out vec4 v_color;

void main() {
    vec3 d = i_to.xyz - i_from.xyz;
    float t = fract(u_time * i_to.w + i_from.w);
    vec2 fwd = normalize(d.xy + vec2(1e-6, 0.0));
    vec2 left = vec2(-fwd.y, fwd.x);
    float fade = smoothstep(0.0, 0.06, t) * smoothstep(1.0, 0.94, t);
    vec3 local = p3d_Vertex.xyz * i_color.a * fade;
    vec3 p = mix(i_from.xyz, i_to.xyz, t) + vec3(fwd * local.x + left * local.y, local.z);
    v_color = vec4(i_color.rgb, 1.0);
    gl_Position = p3d_ModelViewProjectionMatrix * vec4(p, 1.0);
}
