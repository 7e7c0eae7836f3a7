#version 150
// The land under the city: a large square, fogged towards the horizon.
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ModelViewMatrix;
uniform vec2 u_fog_range;
in vec4 p3d_Vertex;
out vec2 v_xy;
out float v_fog;

void main() {
    v_xy = p3d_Vertex.xy;
    float dist = length((p3d_ModelViewMatrix * p3d_Vertex).xyz);
    v_fog = clamp((dist - u_fog_range.x) / max(u_fog_range.y - u_fog_range.x, 1e-3), 0.0, 1.0);
    gl_Position = p3d_ModelViewProjectionMatrix * p3d_Vertex;
}
